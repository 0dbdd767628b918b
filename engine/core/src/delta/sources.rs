//! The CTEs a delta term reads: each source's consumed changes as a signed
//! bag (`__pgt_d<s>`), its old state (`__pgt_o<s>`: current rows and the
//! negated delta), and the same pair for a subquery in FROM.

use super::join_terms::Version;
use super::narrowing::Restriction;
use super::{netting, quoted_list, Gen};
use crate::model::{Block, Occ, Rel};
use crate::sql::quote_ident;

impl Gen<'_> {
    /// Define `__pgt_d<s>`, the consumed changes of a source, once.
    pub(super) fn source_delta_cte(&mut self, s: usize) {
        if self.defined_sources.contains(&s) {
            return;
        }
        self.defined_sources.push(s);
        let consumed = self.consumed(s);
        let buffer = self.changes_of(s);
        let src = &self.sources[s];
        let cols = quoted_list(src.columns.iter().map(|c| c.as_str()));
        let ctes = netting::netted_images_ctes(
            &netting::Buffer {
                s,
                src,
                buffer: &buffer,
                consumed: &consumed,
            },
            &cols,
        );
        self.ctes.extend(ctes);
    }

    /// Define `__pgt_o<s>`, a source's old state, once (after its delta).
    pub(super) fn source_old_cte(&mut self, s: usize) {
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

    /// Define `__pgt_u<s>`, source `s` as it was before the consumed
    /// changes as a plain (unsigned) relation, once: what a [`Rel::Keyed`]
    /// subquery's old rows are recomputed from. Its current rows less
    /// those the changes added, plus those they removed. A row added is
    /// found by its exact text, and of equal rows only as many copies as
    /// were added are left out. The source's primary key, when it has
    /// one, only leads the search: a current row can be an added one only
    /// if its key equals that row's key (rows with a NULL in the key,
    /// which a dropped key may leave, are searched by text alone, and only
    /// while a key column may hold NULL), so the result stays exact if the
    /// key went away since planning.
    /// A source without changes to consume is read as it is.
    pub(super) fn source_unsigned_old_cte(&mut self, s: usize) {
        if self.defined_unsigned_old.contains(&s) {
            return;
        }
        self.defined_unsigned_old.push(s);
        let body = self.unsigned_old_body(s, None);
        let cols = quoted_list(self.sources[s].columns.iter().map(|c| c.as_str()));
        self.ctes
            .push(format!("__pgt_u{s}({cols}) AS NOT MATERIALIZED ({body})"));
    }

    /// Define a CTE of `__pgt_u<s>`'s rows for which `restriction` holds,
    /// applied inside each branch of the union, where PostgreSQL can
    /// answer it from an index (see `narrowing.rs`); returns its name.
    pub(super) fn source_narrowed_old_cte(
        &mut self,
        s: usize,
        restriction: &Restriction,
    ) -> String {
        let name = format!("__pgt_u{s}_{}", self.next_values);
        self.next_values += 1;
        let body = self.unsigned_old_body(s, Some(restriction));
        let cols = quoted_list(self.sources[s].columns.iter().map(|c| c.as_str()));
        self.ctes
            .push(format!("{name}({cols}) AS NOT MATERIALIZED ({body})"));
        name
    }

    /// The SELECT of source `s` as it was before the consumed changes (see
    /// [`Gen::source_unsigned_old_cte`]), only where `restriction` holds.
    fn unsigned_old_body(&mut self, s: usize, restriction: Option<&Restriction>) -> String {
        let changed = self.changed.as_ref().is_none_or(|c| c.contains(&s));
        if changed {
            self.source_delta_cte(s);
        }
        let src = &self.sources[s];
        let cols = quoted_list(src.columns.iter().map(|c| c.as_str()));
        // The restriction on the changes `d`, and the table `t` read
        // where `conditions` and the restriction hold.
        let also = |alias: &str| match restriction {
            Some(r) => format!(" AND ({})", r.condition(alias)),
            None => String::new(),
        };
        let prefixed = |p: &str| -> String {
            src.columns
                .iter()
                .map(|c| format!("{p}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (t_cols, d_cols, x_cols) = (prefixed("t"), prefixed("d"), prefixed("x"));
        let table = src.qualified();
        let read = |conditions: &str| match restriction {
            Some(r) => r
                .table_branches("t")
                .iter()
                .map(|b| format!("SELECT {t_cols} FROM {table} t WHERE {conditions} AND {b}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
            None => format!("SELECT {t_cols} FROM {table} t WHERE {conditions}"),
        };
        if !changed {
            return match restriction {
                Some(_) => read("true"),
                None => format!("SELECT {t_cols} FROM {table} t"),
            };
        }
        let same_row = format!(
            "ROW({d_cols})::pg_catalog.text OPERATOR(pg_catalog.=) ROW({t_cols})::pg_catalog.text"
        );
        // The current rows of `t` for which `rows` holds, less the added
        // ones (`lead`: a condition every added row equal to `t` meets).
        // Only the first part reads `t` by `restriction`; the second is
        // driven by the added rows `d`, restricted instead of `t`: an added
        // row and a current row of the same text satisfy `rows` and the
        // restriction alike.
        let kept = |rows: &dyn Fn(&str) -> String, lead: &str| {
            format!(
                "{} UNION ALL SELECT {x_cols} FROM (SELECT {t_cols}, d.__pgt_m AS __pgt_dm, \
                 pg_catalog.row_number() OVER (PARTITION BY ROW({d_cols})::pg_catalog.text) AS __pgt_c \
                 FROM {table} t JOIN __pgt_d{s} d ON d.__pgt_m > 0 AND {lead} AND {same_row} WHERE {}{}) \
                 x({cols}, __pgt_dm, __pgt_c) WHERE x.__pgt_c > x.__pgt_dm",
                read(&format!(
                    "{} AND NOT EXISTS (SELECT 1 FROM __pgt_d{s} d \
                     WHERE d.__pgt_m > 0 AND {lead} AND {same_row})",
                    rows("t")
                )),
                rows("d"),
                also("d"),
            )
        };
        let current = if src.key.is_empty() {
            kept(&|_| "true".to_string(), "true")
        } else {
            let key: Vec<String> = src.key.iter().map(|k| quote_ident(k)).collect();
            let whole = |p: &str| -> String {
                key.iter()
                    .map(|k| format!("{p}.{k} IS NOT NULL"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            let same_key: Vec<String> = key
                .iter()
                .map(|k| format!("d.{k} OPERATOR(pg_catalog.=) t.{k}"))
                .collect();
            // Rows with a NULL in the key exist only if a key column lost
            // its NOT NULL since planning, in the table or in any of the
            // inheritance children it reads (one added later may drop
            // it): a one-time filter on the catalog skips their branches
            // otherwise.
            let names: Vec<String> = src
                .key
                .iter()
                .map(|k| crate::sql::quote_literal(k))
                .collect();
            let nullable = format!(
                "EXISTS (WITH RECURSIVE __pgt_member(r) AS (SELECT {}::pg_catalog.oid \
                 UNION SELECT __pgt_i.inhrelid FROM pg_catalog.pg_inherits __pgt_i \
                 JOIN __pgt_member ON __pgt_i.inhparent OPERATOR(pg_catalog.=) __pgt_member.r) \
                 SELECT FROM pg_catalog.pg_attribute __pgt_a JOIN __pgt_member \
                 ON __pgt_a.attrelid OPERATOR(pg_catalog.=) __pgt_member.r \
                 WHERE __pgt_a.attname OPERATOR(pg_catalog.=) ANY (ARRAY[{}]::pg_catalog.name[]) \
                 AND NOT __pgt_a.attnotnull)",
                src.oid,
                names.join(", ")
            );
            format!(
                "{} UNION ALL {}",
                kept(&|p| whole(p), &same_key.join(" AND ")),
                kept(&|p| format!("NOT ({}) AND {nullable}", whole(p)), "true")
            )
        };
        format!(
            "{current} UNION ALL SELECT {d_cols} FROM __pgt_d{s} d \
             CROSS JOIN LATERAL pg_catalog.generate_series(1, -d.__pgt_m) WHERE d.__pgt_m < 0{}",
            also("d")
        )
    }

    /// Define `__pgt_sd<id>` for a subquery occurrence, and `__pgt_so<id>`
    /// (its old state) when `with_old`.
    ///
    /// A subquery holding subqueries in expressions that are not filters,
    /// outer joins or a keyed subquery whose rows are not deterministic
    /// has no exact delta ([`Rel::delta_is_exact`]): `__pgt_sd<id>` then
    /// holds every row of it
    /// a change may have added, removed or altered (old and new values
    /// alike, see `subqueries.rs`), which is what the affected keys of an
    /// enclosing grouped block need, and nothing reads it as an exact delta.
    /// Each is defined once, however many terms read it.
    pub(super) fn sub_ctes(&mut self, id: usize, rel: &Rel, columns: &[String], with_old: bool) {
        let cols = quoted_list(columns.iter().map(|c| c.as_str()));
        if !self.defined_sub_delta.contains(&id) {
            self.defined_sub_delta.push(id);
            let delta = if rel.delta_is_exact() {
                self.delta(rel)
            } else {
                self.reached_rows(rel)
            };
            self.ctes.push(format!(
                "__pgt_sd{id}({cols}, __pgt_m) AS MATERIALIZED ({delta})"
            ));
        }
        if with_old && !self.defined_sub_old.contains(&id) {
            self.defined_sub_old.push(id);
            self.ctes.push(format!(
                "__pgt_so{id}({cols}, __pgt_m) AS NOT MATERIALIZED (\
                 SELECT __pgt_s.*, 1::bigint FROM ({}) __pgt_s UNION ALL SELECT {cols}, -__pgt_m FROM __pgt_sd{id})",
                rel.sql()
            ));
        }
    }

    /// Make sure the CTEs the block's `versions` read exist: the delta of
    /// every changed occurrence and, where a term reads it, its old state
    /// (a general plan defines every old state, as it always has).
    pub(super) fn prepare_block(&mut self, block: &Block, versions: &[(Vec<Version>, bool)]) {
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
                Occ::Invariant => {}
            }
        }
    }
}
