//! Delta terms: which version of each FROM occurrence a term reads.
//! A general plan telescopes over the occurrences (earlier ones new, one
//! its delta, later ones their old state), so the `dR ⋈ dS` term is counted
//! once; a plan specialised to at most [`MAX_INCLUSION_EXCLUSION`] changed
//! occurrences combines them by inclusion-exclusion over new states and
//! reads no old state at all.

use sqlparser::ast::{Distinct, Ident, ObjectName, Select, TableFactor};

use super::{outer_joins, parse_expr, Gen, MAX_INCLUSION_EXCLUSION};
use crate::analyze::{alias_of, for_each_factor_mut};
use crate::model::{Block, Occ};
use crate::sql::quote_ident;

/// Which version of an occurrence a delta term reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// The relation as it is now.
    New,
    /// Its consumed changes, as a signed bag.
    Delta,
    /// Its state before those changes (now plus the negated delta).
    Old,
}

/// The terms of a block of `n` occurrences of which those in `changed` may
/// have changed: for each, the version every occurrence reads and whether
/// the term is subtracted. `specialised` says the other occurrences are
/// known not to have changed (a plan for the sources with changes);
/// otherwise `changed` is every occurrence.
///
/// Up to [`MAX_INCLUSION_EXCLUSION`] changed occurrences of a specialised
/// plan combine by inclusion-exclusion: every non-empty subset reads its
/// deltas and the rest their new state, a subset of even size subtracted.
/// So do any number when `new_states_only`. Otherwise the delta telescopes: earlier changed occurrences new, this
/// one its delta, later ones their old state; unchanged ones new. No
/// changed occurrence: no term.
pub(super) fn select_terms(
    n: usize,
    changed: &[usize],
    specialised: bool,
    new_states_only: bool,
) -> Vec<(Vec<Version>, bool)> {
    if specialised && (changed.len() <= MAX_INCLUSION_EXCLUSION || new_states_only) {
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

impl Gen<'_> {
    /// Whether occurrence `occ` may have changed.
    pub(super) fn occ_changed(&self, occ: &Occ) -> bool {
        if matches!(occ, Occ::Invariant) {
            return false;
        }
        let Some(changed) = &self.changed else {
            return true;
        };
        match occ {
            Occ::Source { source } => changed.contains(source),
            Occ::Sub { rel, .. } => rel.sources().iter().any(|s| changed.contains(s)),
            Occ::Invariant => false,
        }
    }

    /// The delta terms of a block: which version each occurrence reads,
    /// and whether the term is subtracted.
    pub(super) fn term_versions(&self, block: &Block) -> Vec<(Vec<Version>, bool)> {
        let n = block.occs.len();
        let changed: Vec<usize> = (0..n)
            .filter(|i| self.occ_changed(&block.occs[*i]))
            .collect();
        // Outer joins never read an old state (see `outer_joins.rs`);
        // analysis bounds how many occurrences such a block has.
        let exact_states = !block.outer.is_empty();
        select_terms(
            n,
            &changed,
            self.changed.is_some() || exact_states,
            exact_states,
        )
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
            .flat_map(|(versions, negate)| {
                outer_joins::variants(block, versions)
                    .into_iter()
                    .map(|forms| {
                        let (mut select, mut mult) = substituted(block, versions);
                        outer_joins::apply(block, &mut select, &forms);
                        if *negate {
                            mult = format!("-({mult})");
                        }
                        extra(&mut select, mult);
                        format!("({select})")
                    })
                    .collect::<Vec<_>>()
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
        // A column list renaming a table's columns applies to its delta
        // and old state too (their columns are the table's).
        let renamed: Vec<String> = match (&*factor, occ) {
            (TableFactor::Table { alias: Some(a), .. }, Occ::Source { .. }) => a
                .columns
                .iter()
                .map(|c| crate::analyze::fold(&c.name))
                .collect(),
            _ => Vec::new(),
        };
        let cte = match (occ, version) {
            (Occ::Source { source }, Version::Delta) => format!("__pgt_d{source}"),
            (Occ::Source { source }, _) => format!("__pgt_o{source}"),
            (Occ::Sub { id, .. }, Version::Delta) => format!("__pgt_sd{id}"),
            (Occ::Sub { id, .. }, _) => format!("__pgt_so{id}"),
            (Occ::Invariant, _) => unreachable!("an invariant FROM item is read as written"),
        };
        mult.push(format!("{}.__pgt_m", quote_ident(&alias)));
        *factor = TableFactor::Table {
            name: ObjectName::from(vec![Ident::new(cte)]),
            alias: Some(alias_of(Ident::with_quote('"', alias), &renamed)),
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
            Occ::Invariant => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Version::{Delta as D, New as N, Old as O};
    use super::*;

    #[test]
    fn a_general_plan_telescopes_once_per_occurrence() {
        assert_eq!(
            select_terms(3, &[0, 1, 2], false, false),
            vec![
                (vec![D, O, O], false),
                (vec![N, D, O], false),
                (vec![N, N, D], false),
            ]
        );
    }

    #[test]
    fn changed_occurrences_of_a_specialised_plan_combine_by_inclusion_exclusion() {
        // a ⋈ b ⋈ c with a and c changed: da·b·c + a·b·dc − da·b·dc.
        assert_eq!(
            select_terms(3, &[0, 2], true, false),
            vec![
                (vec![D, N, N], false),
                (vec![N, N, D], false),
                (vec![D, N, D], true),
            ]
        );
        // One changed occurrence: one term, the others as they are.
        assert_eq!(
            select_terms(2, &[1], true, false),
            vec![(vec![N, D], false)]
        );
    }

    #[test]
    fn too_many_changed_occurrences_telescope_over_the_changed_ones() {
        let terms = select_terms(5, &[0, 1, 2, 4], true, false);
        assert_eq!(terms.len(), 4);
        assert_eq!(terms[1], (vec![N, D, O, N, O], false));
        assert!(terms.iter().all(|(v, negated)| !negated && v[3] == N));
    }

    #[test]
    fn nothing_changed_means_no_term() {
        assert!(select_terms(3, &[], true, false).is_empty());
    }
}
