//! Delta terms: which version of each FROM occurrence a term reads.
//! A general plan telescopes over the occurrences (earlier ones new, one
//! its delta, later ones their old state), so the `dR ⋈ dS` term is counted
//! once; a plan specialised to at most [`MAX_INCLUSION_EXCLUSION`] changed
//! occurrences combines them by inclusion-exclusion over new states and
//! reads no old state at all.

use sqlparser::ast::{Distinct, Ident, ObjectName, Select, TableFactor};

use super::{parse_expr, Gen, MAX_INCLUSION_EXCLUSION};
use crate::analyze::{alias_of, for_each_factor_mut};
use crate::model::{Block, Occ, Rel};
use crate::sql::quote_ident;

/// Which version of an occurrence a delta term reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    New,
    Delta,
    Old,
}

impl Gen<'_> {
    /// Whether occurrence `occ` may have changed.
    pub(super) fn occ_changed(&self, occ: &Occ) -> bool {
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
    pub(super) fn term_versions(&self, block: &Block) -> Vec<(Vec<Version>, bool)> {
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
    pub(super) fn term_selects(
        &mut self,
        block: &Block,
        extra: &dyn Fn(&mut Select, String),
    ) -> Vec<String> {
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
}

/// A delta term of a block: occurrence `k` reads `versions[k]` (the plain
/// relation, its delta or its old state). Returns the rewritten block and
/// the term's multiplicity expression.
pub(super) fn substituted(block: &Block, versions: &[Version]) -> (Select, String) {
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
pub(super) fn rel_sources(rel: &Rel) -> Vec<usize> {
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
