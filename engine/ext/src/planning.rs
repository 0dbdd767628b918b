//! From a defining query to a plan: resolve what the query names in the
//! catalog, ask the core to analyse it, choose the effective mode and
//! generate (and validate) the refresh SQL.

use pg_trickle_core::analyze::{self, Analysis};
use pg_trickle_core::catalog::{Catalog, FunctionFacts, OutputColumn, SourceTable};
use pg_trickle_core::delta::algebraic::support_columns;
use pg_trickle_core::delta::{plan_fingerprint, plan_refresh, RefreshPlan};
use pg_trickle_core::ir::{Mode, OpNode, RequestedMode};

use crate::catalog::stream_tables::StoredPlan;
use crate::security::Owner;
use crate::spi::{in_subtransaction, raise, rows};

/// A planned stream table: analysis, effective mode and its SQL.
pub struct Planned {
    /// The core's analysis (sources, tree, model).
    pub analysis: Analysis,
    /// `DIFFERENTIAL` or `FULL`.
    pub effective_mode: Mode,
    /// Why FULL was chosen, when it was.
    pub fallback_reason: Option<String>,
    /// Generated SQL.
    pub plan: RefreshPlan,
    /// The plan's identity ([`plan_fingerprint`]): a refresh specialises
    /// only a fresh analysis with the same one.
    pub fingerprint: String,
    /// The differential statement specialised to every captured source
    /// having changes (DIFFERENTIAL plans whose specialisation validated).
    pub all_changed_sql: Option<String>,
}

impl Planned {
    /// What the catalog stores of this plan: the differential statement
    /// and its fingerprint only for a stream table maintained
    /// DIFFERENTIALLY.
    pub fn stored(&self) -> StoredPlan {
        let diff_sql = match self.effective_mode {
            Mode::Differential => self.plan.diff_sql.clone(),
            Mode::Full => None,
        };
        StoredPlan {
            effective_mode: self.effective_mode,
            fallback_reason: self.fallback_reason.clone(),
            grouped: self.plan.grouped,
            populate_sql: self.plan.populate_sql.clone(),
            full_sql: self.plan.full_sql.clone(),
            fingerprint: diff_sql.as_ref().map(|_| self.fingerprint.clone()),
            all_changed_sql: diff_sql.as_ref().and(self.all_changed_sql.clone()),
            diff_sql,
        }
    }
}

/// The visible columns of a stream table's storage, in order, each with
/// how it enters a row's identity.
pub fn storage_columns(relid: u32) -> Vec<OutputColumn> {
    rows(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid::text, \
         coalesce(NOT c.collisdeterministic, false)::text \
         FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = $1::text::oid AND a.attnum > 0 AND NOT a.attisdropped \
         AND a.attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY a.attnum",
        &[Some(relid.to_string())],
    )
    .into_iter()
    .map(|r| OutputColumn {
        name: r[0].clone().unwrap_or_default(),
        type_sql: r[1].clone().unwrap_or_default(),
        identity: r[2]
            .as_deref()
            .and_then(|t| t.parse().ok())
            .map(crate::column_types::identity)
            .unwrap_or_default(),
        nondeterministic: r[3].as_deref() == Some("true"),
    })
    .collect()
}

pub use crate::sources::source_by_oid;

/// The oid of the relation `written` names, resolved as the defining query
/// resolves it (under its recorded search_path), by a statement that is
/// itself fully qualified so that the path can run nothing.
pub fn resolve_relation(owner: &Owner, written: &str) -> Option<u32> {
    owner
        .resolve_names(|| {
            crate::spi::value(
            "SELECT pg_catalog.to_regclass($1::pg_catalog.text)::pg_catalog.oid::pg_catalog.text",
            &[Some(written.to_string())],
        )
        })
        .and_then(|o| o.parse().ok())
}

/// Every relation `query` names that resolves (through views' names, not
/// their bodies; CTE names resolve to nothing), as the defining query
/// resolves them: what a stream table depends on.
pub fn relations_read(query: &str, owner: &Owner) -> Vec<u32> {
    let Ok(refs) = analyze::referenced_tables(query) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = refs
        .tables
        .iter()
        .filter_map(|written| resolve_relation(owner, written))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Analyse `query`, resolving the names it writes as its owner's recorded
/// search_path does; `storage` (the stream table's relation, once it
/// exists) says whether it holds the algebraic form's support columns.
pub fn analyze_query(query: &str, owner: &Owner, storage: Option<u32>) -> Result<Analysis, String> {
    let refs = analyze::referenced_tables(query).map_err(|e| e.to_string())?;
    let mut catalog = Catalog::new();
    for written in &refs.tables {
        if let Some(table) = resolve_relation(owner, written).and_then(source_by_oid) {
            catalog.insert(written.clone(), table);
        }
    }
    for name in &refs.functions {
        let r = crate::spi::row(
            "SELECT count(*)::text, coalesce(bool_and(provolatile = 'i'), true)::text, \
             coalesce(bool_or(prokind = 'a'), false)::text, coalesce(bool_or(prokind = 'w'), false)::text, \
             coalesce(bool_and(p.proretset AND p.prorettype <> 'pg_catalog.record'::pg_catalog.regtype \
               AND t.typtype <> 'c' AND NOT coalesce('o' = ANY (p.proargmodes) OR 't' = ANY (p.proargmodes), false)), false)::text, \
             (SELECT pg_catalog.string_agg(n::text, ',') FROM pg_catalog.generate_series(0, 100) AS n \
               WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_proc q WHERE q.proname = $1 \
                 AND n BETWEEN q.pronargs - q.pronargdefaults AND q.pronargs) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc q WHERE q.proname = $1 AND q.provolatile <> 'i' \
                 AND (n BETWEEN q.pronargs - q.pronargdefaults AND q.pronargs OR q.provariadic <> 0))) \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid = p.prorettype WHERE p.proname = $1",
            &[Some(name.clone())],
        )
        .unwrap_or_default();
        let flag = |i: usize| r.get(i).cloned().flatten().as_deref() == Some("true");
        catalog.insert_function(
            name.clone(),
            FunctionFacts {
                immutable: flag(1),
                aggregate: flag(2),
                window: flag(3),
                single_column: flag(4),
                // Arities at which every overload taking them is IMMUTABLE.
                immutable_arities: r
                    .get(5)
                    .cloned()
                    .flatten()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            },
        );
    }
    let mut analysis = analyze::analyze(query, &catalog).map_err(|e| e.to_string())?;
    // Before the algebraic shape is read: whether each comparison with a
    // subquery's sum or avg sums exactly (not floating point).
    let answers: Vec<Vec<(usize, bool)>> = pg_trickle_core::probes::filter_sum_probes(&analysis)
        .into_iter()
        .map(|probed| {
            let Some((subs, probe)) = probed else {
                return Vec::new();
            };
            let types = probe_type_oids(&probe, owner);
            subs.into_iter()
                .zip(types)
                .map(|(i, typid)| (i, crate::column_types::aggregate_arg_type(typid).summable()))
                .collect()
        })
        .collect();
    pg_trickle_core::probes::mark_exact_sums(&mut analysis, &answers);
    // Whether both sides of each equality correlating such a subquery
    // have one type: only then are its changes grouped by value.
    let same: Vec<Vec<(usize, bool)>> = pg_trickle_core::probes::filter_link_probes(&analysis)
        .into_iter()
        .map(|probes| {
            probes
                .into_iter()
                .map(|(i, inner, outer)| {
                    let (inner, outer) = (
                        probe_type_oids(&inner, owner),
                        probe_type_oids(&outer, owner),
                    );
                    let known = !inner.is_empty() && !inner.contains(&0);
                    (i, known && inner == outer)
                })
                .collect()
        })
        .collect();
    pg_trickle_core::probes::mark_link_types(&mut analysis, &same);
    // Whether each key of a subquery kept by keys is an array: only one
    // that is not narrows what its old rows read (see the core's
    // `delta/narrowing.rs`).
    let arrays: Vec<Vec<bool>> = pg_trickle_core::probes::keyed_key_probes(&analysis)
        .into_iter()
        .map(|probe| match probe {
            Some(probe) => probe_type_oids(&probe, owner)
                .into_iter()
                .map(|typid| typid == 0 || crate::column_types::key_type(typid).array)
                .collect(),
            None => Vec::new(),
        })
        .collect();
    pg_trickle_core::probes::mark_keyed_key_arrays(&mut analysis, &arrays);
    let probed = key_type_oids(&analysis, owner);
    let oids = without_unhashable_bag_keys(&mut analysis, probed);
    analysis.key_types = oids
        .into_iter()
        .map(crate::column_types::key_type)
        .collect();
    if let Some(probe) = pg_trickle_core::probes::aggregate_arg_probe(&analysis) {
        analysis.aggregate_arg_types = probe_type_oids(&probe, owner)
            .into_iter()
            .map(crate::column_types::aggregate_arg_type)
            .collect();
    }
    analysis.support_stored = storage.is_some_and(|relid| has_support_columns(relid, &analysis));
    Ok(analysis)
}

/// Whether the storage holds every support column of the algebraic form,
/// each of its type (see [`support_columns`]).
fn has_support_columns(relid: u32, analysis: &Analysis) -> bool {
    let Some(wanted) = support_columns(analysis) else {
        return false;
    };
    if wanted.is_empty() {
        return true;
    }
    let names: Vec<String> = wanted.iter().map(|c| c.name.clone()).collect();
    let types: Vec<String> = wanted.iter().map(|c| c.type_sql.to_string()).collect();
    crate::spi::value(
        "SELECT (pg_catalog.count(*) = pg_catalog.cardinality($2::text[]))::text \
         FROM pg_catalog.pg_attribute a JOIN ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[])) AS w(name, type) \
         ON a.attname::text = w.name AND pg_catalog.format_type(a.atttypid, a.atttypmod) = w.type \
         WHERE a.attrelid = $1::text::oid AND a.attnum > 0 AND NOT a.attisdropped",
        &[
            Some(relid.to_string()),
            Some(format!("{{{}}}", names.join(","))),
            Some(format!("{{{}}}", types.join(","))),
        ],
    )
    .as_deref()
        == Some("true")
}

/// Add the algebraic form's support columns the storage lacks (as its
/// owner, who owns the storage), then say again whether it holds them all.
fn add_support_columns(storage: &str, relid: u32, owner: &Owner, analysis: &mut Analysis) {
    if analysis.support_stored {
        return;
    }
    let Some(wanted) = support_columns(analysis) else {
        return;
    };
    if wanted.is_empty() {
        return;
    }
    let adds: Vec<String> = wanted
        .iter()
        .map(|c| format!("ADD COLUMN IF NOT EXISTS {} {}", c.name, c.type_sql))
        .collect();
    let _own = crate::triggers::OwnDdl::begin();
    owner.run(|| crate::spi::run(&format!("ALTER TABLE {storage} {}", adds.join(", ")), &[]));
    // An outbox's triggers name the hidden columns they leave out of its
    // messages: name the new ones too.
    if crate::spi::value(
        "SELECT 'x' FROM pgtrickle.pgt_outboxes o JOIN pgtrickle.pgt_stream_tables s \
         ON s.id OPERATOR(pg_catalog.=) o.st_id WHERE s.relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
        &[Some(relid.to_string())],
    )
    .is_some()
    {
        // Named as this (the extension's) search_path prints it.
        let name = crate::spi::relation_name(relid).unwrap_or_else(|| storage.to_string());
        crate::outbox::publish::install_triggers(&name, &crate::outbox::hidden_columns(relid));
    }
    analysis.support_stored = has_support_columns(relid, analysis);
}

/// A bag (rows kept by their values) may be kept by any of its outputs:
/// those of a type without a hash function (json, point, money, ...) are
/// left out of its keys rather than sending it to FULL. Returns the types
/// of the keys kept.
fn without_unhashable_bag_keys(analysis: &mut Analysis, oids: Vec<u32>) -> Vec<u32> {
    let Ok(pg_trickle_core::analyze::Model::Grouped {
        keys, bag: true, ..
    }) = &mut analysis.model
    else {
        return oids;
    };
    if oids.len() != keys.len() {
        return oids;
    }
    let hashable: Vec<bool> = oids
        .iter()
        .map(|t| crate::column_types::hashable(*t))
        .collect();
    let mut i = 0;
    keys.retain(|_| {
        i += 1;
        hashable[i - 1]
    });
    oids.into_iter()
        .zip(hashable)
        .filter_map(|(t, h)| h.then_some(t))
        .collect()
}

/// The type of each group key of a grouped analysis, asked of PostgreSQL
/// as the owner by a probe that reads no row (empty for anything else, or
/// when the probe fails: the query's own error surfaces where it runs).
fn key_type_oids(analysis: &Analysis, owner: &Owner) -> Vec<u32> {
    match pg_trickle_core::probes::key_probe(analysis) {
        Some(probe) => probe_type_oids(&probe, owner),
        None => Vec::new(),
    }
}

/// The type of each of `probe`'s keys (empty when the probe fails).
fn probe_type_oids(probe: &pg_trickle_core::probes::KeyProbe, owner: &Owner) -> Vec<u32> {
    let sql = probe.types_sql();
    let owner = owner.clone();
    in_subtransaction(move || owner.run(|| crate::spi::row(&sql, &[])))
        .map_err(|f| f.reraise_if_transient())
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.and_then(|t| t.parse().ok()).unwrap_or(0))
        .collect()
}

/// Plan a stream table stored in `relid` for `query` under the requested mode.
/// Raises 0A000 when DIFFERENTIAL is requested but impossible.
pub fn plan(
    name: &str,
    query: &str,
    requested: RequestedMode,
    relid: u32,
    storage: &str,
    owner: &Owner,
) -> Planned {
    plan_with(name, query, requested, (relid, storage), owner, false)
}

/// [`plan`], first adding the algebraic form's support columns the storage
/// lacks: at creation, and at a re-plan, whose next refresh is FULL (how a
/// stream table created before 0.40.0 gains them).
pub fn plan_adding_support(
    name: &str,
    query: &str,
    requested: RequestedMode,
    relid: u32,
    storage: &str,
    owner: &Owner,
) -> Planned {
    plan_with(name, query, requested, (relid, storage), owner, true)
}

fn plan_with(
    name: &str,
    query: &str,
    requested: RequestedMode,
    (relid, storage): (u32, &str),
    owner: &Owner,
    add_support: bool,
) -> Planned {
    let columns = storage_columns(relid);
    let mut analysis = analyze_query(query, owner, Some(relid)).unwrap_or_else(|reason| Analysis {
        sources: Vec::new(),
        tree: OpNode::new("Query", "", vec![])
            .unsupported(format!("queries the analyzer cannot read ({reason})")),
        model: Err(format!("queries the analyzer cannot read ({reason})")),
        key_types: Vec::new(),
        aggregate_arg_types: Vec::new(),
        support_stored: false,
    });
    if add_support {
        add_support_columns(storage, relid, owner, &mut analysis);
    }
    let plan = plan_refresh(&analysis, query, storage, &columns);
    let fingerprint = plan_fingerprint(&analysis, query, storage, &columns);
    let mut reason = match (&analysis.model, requested) {
        (_, RequestedMode::Full) => Some("FULL was requested".to_string()),
        (Err(r), _) => Some(format!("DIFFERENTIAL refresh does not support {r}")),
        (Ok(_), _) => None,
    };
    if reason.is_none() {
        reason = row_security_reason(&analysis, owner);
    }
    if reason.is_none() && plan.grouped {
        reason = grouping_reason(&analysis, relid, owner);
    }
    if reason.is_none() {
        reason = nested_reason(&analysis, owner);
    }
    if reason.is_none() {
        if let Some(diff) = &plan.diff_sql {
            let nargs = plan.diff_nargs();
            let sql = diff.clone();
            let captured: Vec<SourceTable> = plan
                .diff_sources
                .iter()
                .map(|i| analysis.sources[*i].clone())
                .collect();
            // Capture must exist for the delta SQL to validate; if validation
            // fails the subtransaction takes the capture objects away again.
            let as_owner = owner.clone();
            let checked = in_subtransaction(move || {
                for source in &captured {
                    crate::capture::ensure_capture(source);
                }
                as_owner.run(|| crate::spi::prepare_only(&sql, nargs))
            });
            if let Err(f) = checked {
                f.reraise_if_transient();
                reason = Some(format!(
                    "the generated delta SQL did not validate ({}: {})",
                    f.sqlstate, f.message
                ));
            }
        }
    }
    if requested == RequestedMode::Differential {
        if let Some(r) = &reason {
            raise(
                "0A000",
                format!("stream table {name} cannot be maintained DIFFERENTIALLY: {r}"),
                Some("Use refresh_mode => 'AUTO' to fall back to FULL refresh, or 'FULL'.".into()),
            );
        }
    }
    let all_changed_sql = reason.is_none().then(|| {
        crate::specialise::all_changed(&analysis, &plan, (query, storage, &columns), owner)
    });
    Planned {
        effective_mode: if reason.is_some() {
            Mode::Full
        } else {
            Mode::Differential
        },
        fallback_reason: reason,
        analysis,
        plan,
        fingerprint,
        all_changed_sql: all_changed_sql.flatten(),
    }
}

/// Why DIFFERENTIAL is impossible because a source has row-level security
/// for the owner: its change buffer holds every row, policies or not, so
/// only a FULL refresh (which runs the query as the owner) sees exactly
/// the rows the owner may see.
pub fn row_security_reason(analysis: &Analysis, owner: &Owner) -> Option<String> {
    analysis
        .sources
        .iter()
        .find(|s| crate::security::row_security_applies(s.oid, owner.role))
        .map(|s| {
            format!(
                "source {} has row-level security for {} (a change buffer would bypass its policies)",
                s.qualified(),
                crate::security::role_name(owner.role)
            )
        })
}

/// Why a subquery kept by keys cannot be maintained exactly: an output
/// it computes is floating point (a sum or average of float4/float8
/// depends on the order rows are added, and a refresh finds the enclosing
/// rows by the values it recomputes). The probes read no row and run as
/// the owner; one that fails leaves the query's own error to surface
/// where it runs.
fn nested_reason(analysis: &Analysis, owner: &Owner) -> Option<String> {
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    for probe in pg_trickle_core::probes::nested_probes(analysis) {
        let sql = probe.types_sql.clone();
        let as_owner = owner.clone();
        let types = in_subtransaction(move || as_owner.run(|| crate::spi::row(&sql, &[])))
            .map_err(|f| f.reraise_if_transient())
            .ok()
            .flatten()
            .unwrap_or_default();
        for (output, t) in probe.outputs.iter().zip(types) {
            let typid: u32 = t.and_then(|t| t.parse().ok()).unwrap_or(0);
            if typid == FLOAT4 || typid == FLOAT8 {
                return Some(format!(
                    "{output} of type {} in a subquery kept by keys (a floating-point value computed \
                     over its rows depends on the order they are read)",
                    crate::column_types::type_name(typid)
                ));
            }
        }
    }
    None
}

/// Why a grouped stream table cannot be maintained exactly: a group key
/// without a hash function, or a key, a value or an ordered aggregate's
/// `ORDER BY` key under a nondeterministic collation (see `column_types`).
/// The key types come from PostgreSQL, asked as the owner by probes that
/// read no row.
fn grouping_reason(analysis: &Analysis, relid: u32, owner: &Owner) -> Option<String> {
    if let Some((column, collation)) = crate::column_types::nondeterministic_column(relid) {
        return Some(format!(
            "column {column} of a grouped query uses the nondeterministic collation {collation} \
             (equal values spelled differently: which one a group shows depends on the plan)"
        ));
    }
    if let Some(probe) = pg_trickle_core::probes::key_probe(analysis) {
        let types = probe_type_oids(&probe, owner);
        for (key, typid) in probe.keys.iter().zip(&types) {
            if !crate::column_types::hashable(*typid) {
                return Some(format!(
                    "GROUP BY key {key} of type {}, which has no hash function",
                    crate::column_types::type_name(*typid)
                ));
            }
        }
        if let Some((key, name)) = nondeterministic_key(&probe, &types, owner) {
            return Some(format!(
                "GROUP BY key {key} uses the nondeterministic collation {name} \
                 (equal values spelled differently: which one a group shows depends on the plan)"
            ));
        }
    }
    let probe = pg_trickle_core::probes::order_key_probe(analysis)?;
    let types = probe_type_oids(&probe, owner);
    nondeterministic_key(&probe, &types, owner).map(|(key, name)| {
        format!(
            "ORDER BY key {key} of an ordered aggregate uses the nondeterministic collation {name} \
             (rows it ties may differ, and their order in the aggregate depends on the plan)"
        )
    })
}

/// The first of `probe`'s keys (of types `types`) under a nondeterministic
/// collation, with that collation's name.
fn nondeterministic_key(
    probe: &pg_trickle_core::probes::KeyProbe,
    types: &[u32],
    owner: &Owner,
) -> Option<(String, String)> {
    let collatable: Vec<usize> = (0..types.len())
        .filter(|i| crate::column_types::collatable(types[*i]))
        .collect();
    if collatable.is_empty() {
        return None;
    }
    let collations = owner.run(|| crate::spi::row(&probe.collations_sql(&collatable), &[]))?;
    collatable.iter().zip(collations).find_map(|(i, c)| {
        let collation: u32 = c?.parse().ok()?;
        crate::column_types::nondeterministic_collation(collation)
            .map(|name| (probe.keys[*i].clone(), name))
    })
}
